"""Report: every table and figure of the paper, regenerated from files on disk (notebook 06), and the prose
and files that state the results.

    tables.py           Tables 1-9 as data frames (with the source of every number)
    table_writer.py     the one writer of a table: CSV, Markdown and LaTeX
    release_readers.py  the authors' released metric files, read or recomputed
    release.py          where the release is, and the rows that stand in when it is absent
    figures.py          paper Figs. 2-4, drawn with the one style in `reg2rg_lib.plotting`
    kit_figures.py      Kit Figs. 4-6: training curves, region accuracy by checkpoint, ablation bars
    catalog.py          every table and figure by number: file name, title, the words prose uses for it
    regenerate.py       `Inputs` (where a profile run's files are) and the makers that regenerate everything
    narrative.py        computed prose about a run (notebooks 03-06)
    seed_spread.py      the seed spread table and where a run falls against it
    results.py          the README's generated results block
    deviations.py       the README's deviations table
    case_report.py      one CT's report files (`reg2rg report`, notebook 08)
"""
