"""Files and shell commands in the session, next to code execution.

    python -m venv .venv && .venv/bin/pip install -e '.[local]'   # in a clone, once
    .venv/bin/python examples/files_and_commands.py

Cloud with AGENTRUN_* credentials, else the local emulator.
"""

from __future__ import annotations

from agentrun_ci import CodeInterpreter

CSV = "city,temp\nHangzhou,21\nBeijing,14\nShenzhen,27\n"


def main() -> None:
    with CodeInterpreter.from_env() as interpreter:
        interpreter.start_session()  # creates an interpreter for us when none is given

        # Write a file from here, read it from code running in the sandbox. Code runs
        # in /home/user, so it uses relative paths (the local emulator maps /home/user
        # to a per-session directory; the file APIs take the absolute sandbox path).
        interpreter.write_file("/home/user/data/weather.csv", CSV)
        execution = interpreter.execute_code(
            "import csv\n"
            "rows = list(csv.DictReader(open('data/weather.csv')))\n"
            "warmest = max(rows, key=lambda r: int(r['temp']))\n"
            "open('data/warmest.txt', 'w').write(warmest['city'])\n"
            "len(rows)"
        )
        print("rows:", execution.text)

        # A file the code wrote, read back here.
        print("warmest:", interpreter.read_file("/home/user/data/warmest.txt").text)

        names = sorted(entry.name for entry in interpreter.list_files("/home/user/data"))
        print("files:", ", ".join(names))

        # Shell commands: a non-zero exit code is data, not an exception.
        command = interpreter.run_command("wc -l < weather.csv", cwd="/home/user/data")
        print("wc exit:", command.exit_code, "lines:", command.stdout.strip())
        command = interpreter.run_command("ls /no/such/dir")
        print("ls exit:", command.exit_code, "(non-zero)" if command.exit_code else "")


if __name__ == "__main__":
    main()
