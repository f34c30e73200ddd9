"""Report: every table and figure of the paper, regenerated from files on disk (notebook 06).

    tables.py   Tables 1-7 as Markdown and LaTeX (with the source of every number)
    figures.py  paper Figs. 2-4 and Kit Figs. 4-6, drawn with the one style in `reg2rg_lib.plotting`
    catalog.py  every table and figure by number: file name, title, the words prose uses for it
    build.py    `Inputs` (where a profile run's files are) and the makers that regenerate everything
"""
