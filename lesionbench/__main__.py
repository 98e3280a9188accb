from lesionbench.cli import main

raise SystemExit(main())
