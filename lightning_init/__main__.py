from lightning_init.cli import main

raise SystemExit(main())
