from __future__ import annotations

from pipekit.cli.main import console_main


raise SystemExit(console_main())
