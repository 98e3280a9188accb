from lesionbench.cli import console

console()
