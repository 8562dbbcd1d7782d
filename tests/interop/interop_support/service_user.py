"""Running a packaged server (Prosody, ejabberd) as its own system user.

Both refuse to run as root. When this process is root, the server's folder
is handed to the package's user and the server is started through
`setpriv`, not su/runuser: PAM would reset the open-files limit to 1024.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path


def run_as(user: str, folder: Path, home: Path | None = None) -> list[str]:
    """The command prefix that runs a program as `user` (empty when this
    process is not root), after giving it `folder` and everything in it.
    HOME is `home`, or the user's own home folder."""
    if os.geteuid() != 0:
        return []
    account = pwd.getpwnam(user)
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, account.pw_uid, account.pw_gid)
    return [
        "setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
        "env", f"HOME={home or account.pw_dir}",
    ]
