"""`moodlens live`: webcam + microphone scored live on the dashboard.

    moodlens live                       # default camera and microphone
    moodlens live --camera 1 --mic "USB Audio" --backend onnxruntime --record sessions/today
    moodlens live --record sessions/private --record-video faces   # face features, no picture kept

A missing camera or microphone leaves that modality out (noted on the dashboard); with neither,
the command says so in one sentence and exits with status 2.
"""

from __future__ import annotations

import argparse

from moodlens.realtime.commands.common import add_engine_arguments, add_output_arguments


# Output paths the CLI checks before any work starts (moodlens.core.paths.check_outputs).
OUTPUTS = {"jsonl": ("file", "--jsonl"), "record": ("dir", "--record")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--camera", type=int, default=None, metavar="N",
                        help="webcam index (default: the config's sources.camera, 0)")
    parser.add_argument("--no-camera", action="store_true", help="audio only: do not open a camera")
    parser.add_argument("--mic", default=None, metavar="NAME",
                        help="microphone name or index (default: the system default input)")
    add_engine_arguments(parser)
    add_output_arguments(parser)


def _mic_problem(text: str) -> str:
    """The microphone's own sentence out of LiveSource's combined warnings."""
    text = text.strip()
    if text.startswith("Neither") and text.endswith(")") and "(" in text:
        text = text[text.index("(") + 1:-1]            # unwrap "Neither ... could be opened (...)"
    for start in ("The microphone", "PortAudio", "No microphone"):
        if start in text:
            return text[text.index(start):]
    return text or "it could not be opened."


def parse_mic(value):
    if value is None:
        return None
    value = str(value).strip()
    return int(value) if value.isdigit() else value


def main(args: argparse.Namespace) -> int:
    from moodlens.core.errors import MediaError
    from moodlens.realtime.app.session import run_session
    from moodlens.realtime.capture.devices import LiveSource
    from moodlens.realtime.commands.common import finish, live_config, session_output

    config = live_config(args)
    s = config.sources
    camera = None if args.no_camera else (args.camera if args.camera is not None else s.camera)
    mic = parse_mic(args.mic if args.mic is not None else s.mic)
    notices: list[str] = []

    def open_source():
        try:
            source = LiveSource.open(camera_index=camera, mic_device=mic, width=s.width, height=s.height,
                                     fps=s.camera_fps)
        except MediaError as err:
            if mic is not None:   # the user named a microphone: say what became of that one
                raise MediaError(f"--mic {mic!r}: {_mic_problem(str(err))}") from None
            what = "no microphone" if camera is None else f"neither a camera (index {camera}) nor a microphone"
            raise MediaError(f"moodlens live found {what} to capture from on this machine; connect one, "
                             f"or score a file with `moodlens run FILE` or the bundled clip with "
                             f"`moodlens demo`.") from None
        if not source.has_video:
            notices.append("no camera: face absent")
        if not source.has_audio and mic is not None:
            source.close()
            raise MediaError(f"--mic {mic!r}: {_mic_problem(' '.join(getattr(source, 'warnings', [])))}")
        if not source.has_audio:
            notices.append("no microphone: vision only")
        return source

    return finish(run_session(open_source, label="live", config=config, output=session_output(args), realtime=True,
                              source_info={"kind": "live", "camera": camera, "mic": mic}, notices=notices))
