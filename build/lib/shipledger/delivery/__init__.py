"""Progressive delivery: the canary judge, sample sources, the rollout controller and incident suspects."""
