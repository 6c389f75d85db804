"""The command's exit (cli/app.py ``entry_point`` / ``exit_now``): the exit code, the last
lines of stdout and stderr, the ``atexit`` functions and any thread still working all
survive leaving without the interpreter's teardown."""

import subprocess
import sys
import textwrap


def _python(code: str, *args: str, timeout: float = 60.0):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_bad_input_through_the_command_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "nowhere" / "study.toml"
    proc = subprocess.run([sys.executable, "-m", "voxdose", "run", str(missing)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voxdose: error:"), proc.stderr
    assert str(missing) in lines[0] and "Traceback" not in proc.stderr


def test_help_through_a_pipe_is_complete():
    """stdout is a pipe (block-buffered): the whole help text must come out before the
    process leaves by os._exit."""
    proc = subprocess.run([sys.executable, "-m", "voxdose", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    for command in ("demo", "run", "dose", "cohort", "bench"):
        assert command in proc.stdout
    assert proc.stdout.rstrip().endswith("╯")  # the last line of rich's last panel


def test_atexit_functions_and_buffered_output_survive(tmp_path):
    marker = tmp_path / "atexit.txt"
    proc = _python("""
        import atexit, sys
        from pathlib import Path
        from voxdose.cli.app import exit_now
        atexit.register(lambda: Path(sys.argv[1]).write_text("ran"))
        sys.stdout.write("no newline, still buffered")
        exit_now(3)
        """, str(marker))
    assert proc.returncode == 3
    assert proc.stdout == "no newline, still buffered"
    assert marker.read_text() == "ran"


def test_a_thread_still_working_is_waited_for(tmp_path):
    """With a live non-daemon thread the ordinary exit runs (which joins it): its file is
    written completely, and the code is kept."""
    out = tmp_path / "late.txt"
    proc = _python("""
        import sys, threading, time
        from pathlib import Path
        from voxdose.cli.app import exit_now
        def late():
            time.sleep(0.5)
            Path(sys.argv[1]).write_text("done")
        threading.Thread(target=late).start()
        exit_now(5)
        """, str(out))
    assert proc.returncode == 5
    assert out.read_text() == "done"
