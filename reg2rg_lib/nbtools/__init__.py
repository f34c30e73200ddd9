"""Notebook tools: the papermill runner (`reg2rg run-notebooks`), notebook hygiene (`make lint`, `make strip`)
and the prose drift check (`make lint`: every table, figure, run and rule the prose names is one the code
defines)."""
