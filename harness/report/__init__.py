"""Reports: records -> one leaderboard -> Markdown, LaTeX, CSV, HTML and figures.

    aggregate    records -> row labels, the long frame, mean ± std over seeds
    leaderboard  build_leaderboard(): the tables, paper rows and failed runs, built once
    render       render(board_or_records, fmt): markdown and csv; latex and html in their modules
    figures      build_figures(board, store.load_labels, load_data): which figures a report gets
    plots        one matplotlib figure per function (PNG bytes; JPEG for the sample grid)
    fmt          how numbers, budgets and file names are written
"""
