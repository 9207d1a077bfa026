"""What every layer may stand on, importing nothing of the project.

    errors.py   UserError: the base of every error a user can fix (the scripts print it as one line)
    files.py    atomic writes, locks, writable folders
    plots.py    matplotlib's pyplot on its file backend (Agg), for every figure
"""
