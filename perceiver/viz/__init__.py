"""Figures for Perceiver runs: training dashboards, comparisons of runs and attention analyses.

Everything here reads run directories through `perceiver.rundir` only and never imports torch or the training
engine. Pure computations (`training_metrics`, `attention_stats`, `selection`) use numpy alone and can be tested
without matplotlib; the figure modules (`dashboard`, `attention_image`, `attention_points`, `attention_matrix`,
`evolution`, `comparison`, `run_comparison`) draw with matplotlib and seaborn; `reports` ties them to run directories for the
command-line scripts (`visualize_results.py`, `visualize_attention.py`, `demo_visualizations.py`), whose shared
flag checks, run loop and exit codes live in `cli`. `explorer` writes the interactive page instead: one offline HTML
file per run, its script and style in ``explorer_static/``.
"""
