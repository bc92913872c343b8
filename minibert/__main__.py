from minibert.cli import main

raise SystemExit(main())
