"""`ric serve` as a user meets it: the official `openai` client (sync and async, streamed and not),
batching across preferences, bad requests, API keys, a client that disconnects, Ctrl-C, the web page
in a real headless browser, the baselines' runs, and an upstream (proxy) engine."""

import asyncio
import json
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import openai
import pytest

from ric import preference_to_targets
from tests.server.support import Server, build_run

MESSAGES = [{"role": "user", "content": "How do I brew green tea?"}]


def run_info(run_dir: Path) -> dict:
    return json.loads((run_dir / "ric_run.json").read_text())


def expected_targets(run_dir: Path, preference) -> dict:
    info = run_info(run_dir)
    targets = preference_to_targets(preference, info["score_low"], info["score_high"], info["preference_method"])
    return dict(zip(info["rewards"], targets))


def client(server, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=kwargs.pop("api_key", "unused"), max_retries=0, **kwargs)


def test_models_and_a_chat_completion_with_a_preference(server, ric_run):
    api = client(server)
    assert [m.id for m in api.models.list().data] == ["run"]
    answer = api.chat.completions.create(
        model="run", messages=MESSAGES, max_tokens=5, extra_body={"preference": [0.2, 0.8]}
    )
    assert answer.choices[0].message.role == "assistant" and answer.choices[0].finish_reason in ("stop", "length")
    assert answer.ric["targets"] == expected_targets(ric_run, [0.2, 0.8])
    assert answer.ric["preference"] == [0.2, 0.8]
    assert 0 < answer.usage.completion_tokens <= 5 and answer.usage.prompt_tokens > 0
    # without a preference the run's default applies: equal weights
    default = api.chat.completions.create(model="run", messages=MESSAGES, max_tokens=2)
    assert default.ric["preference"] == [0.5, 0.5]
    assert default.ric["targets"] == expected_targets(ric_run, [0.5, 0.5])
    # explicit targets, by the run's normalised scale
    chosen = api.chat.completions.create(
        model="run", messages=MESSAGES, max_tokens=2, extra_body={"targets": [1.0, -0.5]}
    )
    assert chosen.ric["targets"] == {"positivity": 1.0, "conciseness": -0.5}


def test_streamed_chat_and_text_completions(server, ric_run):
    api = client(server)
    chunks = list(
        api.chat.completions.create(
            model="run", messages=MESSAGES, max_tokens=6, stream=True, extra_body={"preference": [0.7, 0.3]}
        )
    )
    assert chunks[0].ric["targets"] == expected_targets(ric_run, [0.7, 0.3])
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.strip() and chunks[-1].choices[0].finish_reason in ("stop", "length")
    completion = api.completions.create(
        model="run", prompt="Name a fruit.", max_tokens=4, extra_body={"preference": [1, 0]}
    )
    assert completion.choices[0].text is not None and completion.ric["targets"] == expected_targets(ric_run, [1, 0])
    pieces = list(api.completions.create(model="run", prompt="Name a fruit.", max_tokens=4, stream=True))
    assert pieces[-1].choices[0].finish_reason in ("stop", "length")


def test_the_async_client_streamed_and_not(server, ric_run):
    async def go():
        api = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        plain = await api.chat.completions.create(
            model="run", messages=MESSAGES, max_tokens=3, extra_body={"preference": [0.4, 0.6]}
        )
        stream = await api.chat.completions.create(
            model="run", messages=MESSAGES, max_tokens=3, stream=True, extra_body={"preference": [0.9, 0.1]}
        )
        chunks = [c async for c in stream]
        await api.close()
        return plain, chunks

    plain, chunks = asyncio.run(go())
    assert plain.ric["targets"] == expected_targets(ric_run, [0.4, 0.6])
    assert chunks[0].ric["targets"] == expected_targets(ric_run, [0.9, 0.1])


def test_sixteen_clients_with_different_preferences_share_batches(server, ric_run):
    before = server.stats()
    preferences = [[round(i / 15, 4), round(1 - i / 15, 4)] for i in range(16)]
    barrier = threading.Barrier(16)

    def ask(preference):
        api = client(server)
        barrier.wait()
        return api.chat.completions.create(
            model="run", messages=MESSAGES, max_tokens=8, extra_body={"preference": preference}
        )

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, preferences))
    for preference, answer in zip(preferences, answers):
        assert answer.ric["targets"] == expected_targets(ric_run, preference)
        assert answer.choices[0].message.content is not None
    after = server.stats()
    batches, rows = after["batches"] - before["batches"], after["rows"] - before["rows"]
    assert rows == 16 and batches < 16, f"16 requests in {batches} batches: {after['batch_sizes']}"
    assert after["largest_batch"] >= 2


@pytest.mark.parametrize(
    "body, param",
    [
        ({"preference": [0.5]}, "preference"),
        ({"preference": [0.5, -0.5]}, "preference"),
        ({"preference": [float("nan"), 1.0]}, "preference"),
        ({"preference": [1.0, float("inf")]}, "preference"),
        ({"preference": [0, 0]}, "preference"),
        ({"preference": ["a", "b"]}, "preference"),
        ({"preference": "0.5,0.5"}, "preference"),
        ({"targets": [99.0, 0.0]}, "targets"),
        ({"targets": [0.0]}, "targets"),
        ({"model": "gpt-4"}, "model"),
        ({"messages": []}, "messages"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 100000}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"n": 3}, "n"),
    ],
)
def test_bad_requests_name_the_field_and_the_server_keeps_serving(server, body, param):
    payload = {"model": "run", "messages": MESSAGES, "max_tokens": 2, **body}
    response = httpx.post(
        server.url + "/v1/chat/completions",
        content=json.dumps(payload),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and param in error["message"]
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200


def test_malformed_and_oversized_bodies(server):
    response = httpx.post(
        server.url + "/v1/chat/completions",
        content=b'{"model": "run", "messages": [',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "body"
    big = json.dumps({"model": "run", "messages": [{"role": "user", "content": "x" * 1_100_000}]})
    response = httpx.post(server.url + "/v1/chat/completions", content=big, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["code"] == "body_too_large"
    assert "Content-Length" in response.json()["error"]["message"], "refused from the header, before reading"

    def chunks():  # chunked, no Content-Length: refused once the bytes read pass the limit
        yield big[:600_000].encode()
        time.sleep(0.4)
        yield big[600_000:].encode()

    response = httpx.post(server.url + "/v1/chat/completions", content=chunks(), timeout=30)
    assert "content-length" not in response.request.headers and response.request.headers["transfer-encoding"]
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "body_too_large" and error["param"] == "body" and "no Content-Length" in error["message"]
    # a refused request is logged with its real latency (the upload above took over 0.4 s)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        refused = [int(ms) for ms in re.findall(r"POST /v1/chat/completions 400 (\d+)ms", server.log.read_text())]
        if refused and max(refused) >= 350:
            break
        time.sleep(0.2)
    assert max(refused) >= 350, f"latencies of refused requests: {refused}"
    long = {"model": "run", "messages": [{"role": "user", "content": "word " * 3000}], "max_tokens": 2}
    response = httpx.post(server.url + "/v1/chat/completions", json=long, timeout=30)
    assert response.status_code == 400 and "tokens is over" in response.json()["error"]["message"]
    assert client(server).chat.completions.create(model="run", messages=MESSAGES, max_tokens=1).choices


def test_the_page_helpers_answer_bad_requests_openai_style(server, ric_run):
    targets = httpx.get(server.url + "/ric/targets", params={"preference": "0.2,0.8"}, timeout=10)
    assert targets.status_code == 200 and targets.json()["targets"] == expected_targets(ric_run, [0.2, 0.8])
    for params in ({}, {"preference": "a,b"}, {"preference": "1"}):
        response = httpx.get(server.url + "/ric/targets", params=params, timeout=10)
        assert response.status_code == 400, (params, response.status_code, response.text)
        error = response.json()["error"]
        assert error["param"] == "preference" and error["type"] == "invalid_request_error", error
        assert "preference" in error["message"]


def test_a_client_that_disconnects_mid_stream_frees_its_row(server):
    before = server.stats()
    payload = {"model": "run", "messages": MESSAGES, "max_tokens": 64, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=payload, timeout=30) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert "ric" in json.loads(first[6:])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = server.stats()
        if now["cancelled"] > before["cancelled"] and now["running"] == 0 and now["queued"] == 0:
            break
        time.sleep(0.2)
    assert now["cancelled"] == before["cancelled"] + 1 and now["running"] == 0
    assert now["generated_tokens"] - before["generated_tokens"] < 64, "the row stopped before its max_tokens"
    log = server.log.read_text()
    assert " 499 " in log, "the disconnect is logged"


def test_api_key_required_when_set(ric_run):
    srv = Server(ric_run, env={"RIC_API_KEY": "s3cret"})
    try:
        for key in (None, "wrong"):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            response = httpx.post(
                srv.url + "/v1/chat/completions",
                json={"model": "run", "messages": MESSAGES},
                headers=headers,
                timeout=10,
            )
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            client(srv, api_key="wrong").models.list()
        answer = client(srv, api_key="s3cret").chat.completions.create(model="run", messages=MESSAGES, max_tokens=2)
        assert answer.choices[0].message.content is not None
        assert httpx.get(srv.url + "/health", timeout=5).status_code == 200, "health stays open"
        assert httpx.get(srv.url + "/stats", timeout=5).status_code == 401
    finally:
        srv.stop()


def test_bfloat16_weights_answer_and_are_refused_with_an_upstream(ric_run, capsys):
    from ric.cli import main

    srv = Server(ric_run, "--dtype", "bfloat16")
    try:
        answer = client(srv).chat.completions.create(
            model="run", messages=MESSAGES, max_tokens=3, extra_body={"preference": [0.9, 0.1]}
        )
        assert answer.ric["targets"] == expected_targets(ric_run, [0.9, 0.1]) and answer.usage.completion_tokens > 0
    finally:
        srv.stop()
    assert "bfloat16 weights" in srv.log.read_text()
    assert main(["serve", str(ric_run), "--dtype", "bfloat16", "--upstream", "http://127.0.0.1:9/v1"]) == 2
    assert "--dtype: the upstream server holds the weights" in capsys.readouterr().err
    assert main(["serve", str(ric_run), "--dtype", "float64"]) == 2
    assert "--dtype: 'float64' is not a dtype to answer in" in capsys.readouterr().err


def test_full_queue_answers_429_and_ctrl_c_finishes_in_flight_requests(ric_run):
    srv = Server(ric_run, "--max-queue", "1", "--max-tokens", "256")
    try:
        payload = {"model": "run", "messages": MESSAGES, "max_tokens": 200, "temperature": 0, "stream": True}
        received: dict = {"text": "", "done": False}
        started = threading.Event()

        def stream():
            with httpx.stream("POST", srv.url + "/v1/chat/completions", json=payload, timeout=120) as response:
                for line in response.iter_lines():
                    if line == "data: [DONE]":
                        received["done"] = True
                    elif line.startswith("data: "):
                        delta = json.loads(line[6:])["choices"][0]["delta"]
                        received["text"] += delta.get("content") or ""
                        if received["text"]:
                            started.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(60), "the first tokens arrive"
        busy = httpx.post(srv.url + "/v1/chat/completions", json={"model": "run", "messages": MESSAGES}, timeout=10)
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert srv.stop() == 0, "Ctrl-C exits cleanly"
        reader.join(60)
        assert received["done"], "the request in flight finished before the server exited"
    finally:
        srv.stop()


def test_the_web_page_in_a_real_browser(server, ric_run):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = Options()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: "targets" in b.find_element(By.ID, "targets-a").text)
        before = browser.find_element(By.ID, "targets-a").text
        mark = browser.find_element(By.ID, "mark-a")  # pane A's chosen preference, on the front
        mark_before = {k: mark.get_attribute(k) for k in ("data-preference", "cx", "cy")}
        assert mark.tag_name == "circle" and mark_before["data-preference"] == "0.50,0.50"
        assert not browser.find_elements(By.ID, "mark-b"), "B is marked only side by side"
        # the plot reads without the docs: values on both axes, the axes named, the base model labelled, and the
        # chosen point's rewards beside its mark (w = (0.5, 0.5) is an evaluated point: its means)
        front = httpx.get(server.url + "/ric/run", timeout=10).json()["front"]
        nx, ny = front["rewards"][:2]
        means = {tuple(p["preference"]): tuple(p["mean"][n] for n in (nx, ny)) for p in front["points"]}
        for axis in "xy":
            ticks = [float(t.text) for t in browser.find_elements(By.CSS_SELECTOR, f"#front text.tick-{axis}")]
            assert len(ticks) == 5 and ticks == sorted(ticks) and ticks[0] < ticks[-1], ticks
        titles = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#front text.axis-title")]
        assert titles == [f"mean {nx} →", f"↑ mean {ny}"]
        assert browser.find_element(By.ID, "base-label").text == "base model"
        x, y = means[(0.5, 0.5)]
        assert browser.find_element(By.ID, "mark-label-a").text == f"A: {nx} {x:.2f}, {ny} {y:.2f}"
        slider = browser.find_elements(By.CSS_SELECTOR, "#sliders-a input.weight-slider")[0]
        browser.execute_script("arguments[0].value = 90; arguments[0].dispatchEvent(new Event('input'));", slider)
        wait.until(lambda b: "0.90, 0.10" in b.find_element(By.ID, "targets-a").text)
        mark = browser.find_element(By.ID, "mark-a")
        mark_after = {k: mark.get_attribute(k) for k in ("data-preference", "cx", "cy")}
        assert mark_after["data-preference"] == "0.90,0.10", mark_after
        if means[(0.5, 0.5)] != means[(1.0, 0.0)]:  # w=(0.9, 0.1) lies between these two evaluated points
            assert (mark_after["cx"], mark_after["cy"]) != (mark_before["cx"], mark_before["cy"]), "the mark moved"
        after = browser.find_element(By.ID, "targets-a").text
        expected = expected_targets(ric_run, [0.9, 0.1])
        assert after != before and all(f"{n}={t:.1f}" in after for n, t in expected.items()), after
        outputs = [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#sliders-a output")]
        assert outputs == ["0.90", "0.10"], "the weights stay summing to 1"
        browser.find_element(By.ID, "send").click()
        wait.until(lambda b: b.find_element(By.ID, "answer-a").get_attribute("data-done") == "1")
        assert browser.find_element(By.ID, "answer-a").text.strip(), "an answer streamed in"
        # side by side: two preferences, two answers, and B's preference marked too (a square, not a circle)
        browser.find_element(By.ID, "side-by-side").click()
        mark_b = browser.find_element(By.ID, "mark-b")
        assert mark_b.tag_name == "rect" and mark_b.get_attribute("data-preference") == "1.00,0.00"
        assert mark_b.get_attribute("fill") != browser.find_element(By.ID, "mark-a").get_attribute("fill")
        browser.find_element(By.ID, "send").click()
        wait.until(lambda b: all(b.find_element(By.ID, f"answer-{p}").get_attribute("data-done") == "1" for p in "ab"))
    finally:
        browser.quit()


def test_soups_keeps_at_most_max_mixes_and_only_their_weights():
    """A Soups server sees one mix per distinct preference: the mixes and their weights stay bounded
    (conditions made before their mixes, as an evaluation grid makes them, still activate)."""
    from ric.baselines.soups import SoupsGenerator

    class Peft:  # the calls SoupsGenerator makes on a PEFT model
        def __init__(self):
            self.peft_config, self.active = {"policy_a": None, "policy_b": None}, None

        def add_weighted_adapter(self, adapters, weights, name, combination_type):
            assert name not in self.peft_config and combination_type == "cat"
            self.peft_config[name] = list(weights)

        def set_adapter(self, name):
            self.active = name

        def delete_adapter(self, name):
            del self.peft_config[name]

    model = Peft()
    info = SimpleNamespace(num_objectives=2, method="soups", policies=[{"label": "w_1_0"}, {"label": "w_0_1"}])
    soups = SoupsGenerator(model, None, info)
    conditions = [soups.condition(preference=[i / 40, 1 - i / 40]) for i in range(41)]
    assert soups.weights == {}, "making a condition stores nothing"
    for condition in conditions + conditions[:2]:  # the first two were evicted long ago: rebuilt from their keys
        soups.activate(condition.key)
        assert model.peft_config[model.active] == list(condition.preference)
        assert len(soups.mixes) == len(soups.weights) <= soups.max_mixes and set(soups.mixes) == set(soups.weights)
    assert len(model.peft_config) == 2 + soups.max_mixes, "evicted mixes are deleted from the model"


@pytest.mark.parametrize("method", ["morlhf", "soups"])
def test_the_baselines_runs_are_served(tmp_path_factory, tiny_model_dir, method):
    run = build_run(tmp_path_factory.mktemp(f"serve-{method}"), tiny_model_dir, method)
    srv = Server(run, "--batch-window-ms", "200")
    try:
        api = client(srv)
        preferences = [[0.9, 0.1], [0.2, 0.8], [0.9, 0.1]]
        with ThreadPoolExecutor(3) as pool:
            answers = list(
                pool.map(
                    lambda w: api.chat.completions.create(
                        model="run", messages=MESSAGES, max_tokens=3, extra_body={"preference": w}
                    ),
                    preferences,
                )
            )
        policies = [a.ric["policy"] for a in answers]
        if method == "morlhf":
            assert policies == ["w_1.00_0.00", "w_0.00_1.00", "w_1.00_0.00"], "the nearest trained point"
        else:
            assert policies == ["mix w_0.90_0.10", "mix w_0.20_0.80", "mix w_0.90_0.10"]
        response = httpx.post(
            srv.url + "/v1/chat/completions",
            timeout=10,
            json={"model": "run", "messages": MESSAGES, "targets": [0.1, 0.2]},
        )
        assert response.status_code == 400 and response.json()["error"]["param"] == "targets"
    finally:
        srv.stop()


def test_a_prt_run_is_served_steering_another_base(tmp_path_factory, tiny_model_dir, smol_tokenizer, capsys):
    """`ric serve RUN --base MODEL`: r trained on the tiny Llama steers a tiny Qwen2 of the same vocabulary."""
    from ric.cli import main
    from tests.helpers import tiny_model

    folder = tmp_path_factory.mktemp("serve-prt")
    run = build_run(folder, tiny_model_dir, "prt")
    qwen = folder / "qwen2"
    tiny_model("qwen2", smol_tokenizer, seed=1).save_pretrained(qwen)
    smol_tokenizer.save_pretrained(qwen)
    srv = Server(run, "--base", str(qwen), "--batch-window-ms", "200")
    try:
        api = client(srv)
        answer = api.chat.completions.create(
            model="run", messages=MESSAGES, max_tokens=4, extra_body={"preference": [0.8, 0.2]}
        )
        assert answer.ric["targets"] and answer.ric["preference"] == [0.8, 0.2]
        stream = api.completions.create(
            model="run", prompt="Name a fruit.", max_tokens=4, stream=True, extra_body={"preference": [0.1, 0.9]}
        )
        assert sum(1 for _ in stream) >= 2
        assert srv.stats()["generated_tokens"] > 0 and srv.stats()["requests"] == 2
    finally:
        srv.stop()
    assert main(["serve", str(run), "--upstream", "http://127.0.0.1:9/v1"]) == 2
    assert "two models together" in capsys.readouterr().err


def test_an_upstream_openai_server_answers_behind_the_preference_mapping(ric_run):
    """`ric serve --upstream URL` maps the preference to tags and sends the formatted prompt upstream
    (vLLM in production; here another `ric serve --raw` of the same run, a real OpenAI-compatible server)."""
    upstream = Server(ric_run, "--raw", "--api-key", "up-key")  # the flag (the other API key test uses RIC_API_KEY)
    proxy = direct = None
    try:
        refused = httpx.post(upstream.url + "/v1/completions", json={"model": "run", "prompt": "Hi"}, timeout=10)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        proxy = Server(
            ric_run, "--upstream", upstream.url + "/v1", "--upstream-model", "run", "--upstream-api-key", "up-key"
        )
        direct = Server(ric_run)
        ask = dict(model="run", messages=MESSAGES, max_tokens=6, temperature=0, extra_body={"preference": [0.3, 0.7]})
        through = client(proxy).chat.completions.create(**ask)
        local = client(direct).chat.completions.create(**ask)
        assert through.ric == local.ric and through.ric["targets"] == expected_targets(ric_run, [0.3, 0.7])
        assert through.choices[0].message.content == local.choices[0].message.content, "greedy: the same answer"
        streamed = list(client(proxy).chat.completions.create(**ask, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in streamed)
        assert text.strip() == local.choices[0].message.content, "the same deltas (a whole answer is also stripped)"
        assert upstream.stats(Authorization="Bearer up-key")["requests"] == 2 and proxy.stats()["requests"] == 2
        raw = httpx.post(
            upstream.url + "/v1/chat/completions",
            json={"model": "run", "messages": MESSAGES},
            headers={"Authorization": "Bearer up-key"},
            timeout=10,
        )
        assert raw.status_code == 400, "a raw server takes formatted prompts only"
    finally:
        for srv in (direct, proxy, upstream):
            if srv is not None:
                srv.stop()
