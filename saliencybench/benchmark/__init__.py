"""Registry, config, runner, cache, results store, leaderboard, plots and CLI."""
