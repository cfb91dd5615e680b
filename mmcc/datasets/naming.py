"""Market-1501's image file names, written and read in one place.

A name like ``0002_c1s1_000451_03.jpg`` holds the identity (``0002``; ``-1``
for junk boxes, ``0000`` for distractors), the camera (``c1``: one digit),
the video sequence of that camera (``s1``), the frame (``000451``) and the
detection box in that frame (``03``).

:class:`~mmcc.datasets.Market1501` reads names with
:data:`MARKET_NAME_PATTERN`; the synthetic renderer
(:mod:`mmcc.testing.synthetic`) writes them with :func:`market_name`, and
tests and tools read them back with :func:`parse_market_name`.
"""
import os.path as osp
import re
from typing import NamedTuple

# Matched with ``fullmatch`` against a base name. Field widths are not
# enforced (the release pads them, other copies may not); the camera is one
# digit. re.ASCII: \d is 0-9 only, not any Unicode digit.
MARKET_NAME_PATTERN = re.compile(
    r'(?P<pid>-1|\d+)_c(?P<cam>\d)s(?P<seq>\d+)'
    r'_(?P<frame>\d+)_(?P<box>\d+)\.jpg', re.ASCII)
MARKET_NAME_EXAMPLE = '0002_c1s1_000451_03.jpg'
# Every field fits int64, as the data sets' label arrays do.
_INT64_MAX = 2**63 - 1


class MarketName(NamedTuple):
    """The fields of a Market-1501 file name, as written in it.

    ``camera`` is the number after ``c`` (1-based in the release), not a
    0-based ``camid``.
    """
    pid: int
    camera: int
    seq: int
    frame: int
    box: int


def market_name(pid: int, camera: int, seq: int, frame: int, box: int) -> str:
    """Build a Market-1501 file name.

    Args:
        pid (int): Identity, ``>= 0``, or ``-1`` for junk (written ``-1``);
            written with at least four digits.
        camera (int): Camera number as written, ``0..9``.
        seq (int): Sequence number, ``>= 0``.
        frame (int): Frame number, ``>= 0``; at least six digits.
        box (int): Box number, ``>= 0``; at least two digits.

        All fields are at most ``2**63 - 1``.

    Returns:
        str: The base name, e.g. ``'0002_c1s1_000451_03.jpg'`` for
        ``market_name(2, 1, 1, 451, 3)``.
    """
    if (pid < -1 or not 0 <= camera <= 9 or min(seq, frame, box) < 0
            or max(pid, seq, frame, box) > _INT64_MAX):
        raise ValueError(f'no Market-1501 name for pid={pid}, '
                         f'camera={camera}, seq={seq}, frame={frame}, '
                         f'box={box}')
    pid_str = '-1' if pid < 0 else f'{pid:04d}'
    return f'{pid_str}_c{camera}s{seq}_{frame:06d}_{box:02d}.jpg'


def parse_market_name(name: str) -> MarketName:
    """Read the fields of a Market-1501 file name or path.

    Args:
        name (str): A file name, or a path whose base name is one.

    Returns:
        MarketName: ``(pid, camera, seq, frame, box)``, as written.

    Raises:
        ValueError: The base name does not follow the naming, or a number
            in it does not fit int64; the message quotes ``name``.
    """
    match = MARKET_NAME_PATTERN.fullmatch(osp.basename(name))
    if match is None:
        raise ValueError(f'not a Market-1501 file name: {name!r} (expected '
                         f'e.g. {MARKET_NAME_EXAMPLE!r})')
    fields = []
    for key, digits in match.groupdict().items():
        # checked before int(), which refuses over 4,300 digits
        if len(digits.lstrip('-').lstrip('0')) > 19 or \
                int(digits) > _INT64_MAX:
            shown = digits if len(digits) <= 25 else (
                f'{digits[:20]}... ({len(digits)} digits)')
            raise ValueError(f'Market-1501 file name {name!r}: {key} '
                             f'{shown} out of range (at most {_INT64_MAX})')
        fields.append(int(digits))
    return MarketName(*fields)
