from tether.cli.app import main

raise SystemExit(main())
