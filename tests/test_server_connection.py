"""Where napari remembers its ramseg server (issue 31, ``server/connection.py``): the address in the user's
config folder, the token in a 0600 file beside it, never in a repr or a log line."""

from __future__ import annotations

import stat

import pytest

from napari_ramseg.errors import RamsegInputError
from napari_ramseg.server import connection

TOKEN = "settings-token-0123456789abcdef"


def test_the_server_is_remembered_with_its_token_in_a_private_file(tmp_path, monkeypatch):
    monkeypatch.setenv(connection.CONFIG_ENV, str(tmp_path / "config"))
    assert connection.saved() is None
    saved = connection.save("http://gpu-host:8765/", TOKEN)
    assert saved.url == "http://gpu-host:8765" and connection.saved() == saved
    token_file = tmp_path / "config" / connection.TOKEN_NAME
    assert token_file.read_text().strip() == TOKEN
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert TOKEN not in repr(saved) and TOKEN not in (tmp_path / "config" / connection.SETTINGS_NAME).read_text()
    # a new address keeps the token; an empty token forgets it (a server on loopback needs none)
    assert connection.save("http://other:1234", None).token_file == token_file
    assert connection.save("http://127.0.0.1:8765", "").token_file is None and not token_file.exists()


@pytest.mark.parametrize("url, token, problem", [("gpu-host:8765", None, "must look like http://"),
                                                 ("http://gpu-host:8765", "short", "at least 16 characters")])
def test_a_bad_address_or_token_is_refused_in_one_line_and_nothing_is_saved(tmp_path, monkeypatch, url, token,
                                                                            problem):
    monkeypatch.setenv(connection.CONFIG_ENV, str(tmp_path))
    with pytest.raises(RamsegInputError, match=problem):
        connection.save(url, token)
    assert connection.saved() is None
