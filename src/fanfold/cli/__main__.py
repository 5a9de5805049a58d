"""`python -m fanfold.cli`."""

from fanfold.cli import main

main()
