"""python -m research.gradcheck: the command line of research/gradcheck/command.py."""
from research.gradcheck import command

command.run_main()
