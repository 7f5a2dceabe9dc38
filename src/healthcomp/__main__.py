from healthcomp.cli import main

raise SystemExit(main())
