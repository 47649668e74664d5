from trio_klines.cli import main

raise SystemExit(main())
