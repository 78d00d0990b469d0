"""The baselines of the paper, on TRL: MORLHF (one RL policy per preference point) and Rewarded
Soups (one RL policy per reward, mixed at generation time). See `rl.py`."""
