from __future__ import annotations

from pipekit.cli import console_main


raise SystemExit(console_main())
