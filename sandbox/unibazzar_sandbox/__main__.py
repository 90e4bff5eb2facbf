from unibazzar_sandbox.cli import main

raise SystemExit(main())
