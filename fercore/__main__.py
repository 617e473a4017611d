from fercore.cli import main

raise SystemExit(main())
