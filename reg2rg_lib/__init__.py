from reg2rg_lib._version import __version__
