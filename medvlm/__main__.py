from medvlm.cli import main

raise SystemExit(main())
