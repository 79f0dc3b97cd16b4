from sisr.cli import main

raise SystemExit(main())
