"""Issue #11 item 13: an OpenVINO export (convert_model, NNCF int8) opens no network connection.

Runs in a fresh interpreter, as a user's would: NNCF silences its telemetry by itself under
pytest, and openvino_telemetry sends from forked processes, so a probe in this process would
see nothing. The child records every connection attempt, also from its forks, into a file.
"""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

PROBE = textwrap.dedent('''
    import socket, sys, urllib.request
    LOG = sys.argv[1] + "/network.log"

    def refuse(kind):
        def attempt(*args, **kwargs):
            with open(LOG, "a") as fh:  # appended from forked senders too
                fh.write(kind + "\\n")
            raise OSError("no network in this test")
        return attempt

    socket.create_connection = refuse("socket.create_connection")
    socket.socket.connect = refuse("socket.connect")
    urllib.request.urlopen = refuse("urllib.request.urlopen")

    from lightexport import api
    from lightexport.calib import write_sample_photos

    model = api.load("fasternet_t0")
    api.export(model, "openvino", output=sys.argv[1] + "/t0.xml", input_size=32)
    photos = write_sample_photos(sys.argv[1] + "/photos")
    api.export(model, "openvino", output=sys.argv[1] + "/t0_int8.xml", input_size=32, precision="int8",
               calib=photos, calib_size=2)
    import time
    time.sleep(1)  # senders are forked and joined with a timeout; give a stray one time to log
''')


@pytest.mark.slow
def test_openvino_export_opens_no_connection_and_writes_nothing_in_home(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "NNCF_CI", "NNCF_DEV", "TF_BUILD", "JENKINS_URL"}}
    env["HOME"] = str(tmp_path / "home")  # no consent file: what openvino_telemetry reads as consent
    (tmp_path / "home").mkdir()
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "t0_int8.xml").exists()
    log = tmp_path / "network.log"
    assert not log.exists(), f"connection attempts: {log.read_text().splitlines()}"
    assert list((tmp_path / "home").iterdir()) == []  # no ~/intel/openvino_ga_cid

