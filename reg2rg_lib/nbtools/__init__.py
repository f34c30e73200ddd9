"""Notebook tools: the papermill runner (`reg2rg run-notebooks`) and notebook hygiene (`make lint`, `make strip`)."""
