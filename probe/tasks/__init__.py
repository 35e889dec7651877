"""Tasks: one library function per analysis command. Each resolves the model folder, loads the
split its meta names, runs the analysis, draws, and writes `reports/<model>/<analysis>/`
(figures as PNG + PDF, results.json). The CLI only parses and calls one of these."""
