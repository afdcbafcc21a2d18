from mura.cli import main

raise SystemExit(main())
