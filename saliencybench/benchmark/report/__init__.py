"""Reports generated from a run's results: the leaderboard, figures, AggAtt, Spearman tables."""
