#!/usr/bin/env python3
"""The seed's entry point: `python run.py --target {cpu,customcpu,aie} --precision {fp,int}`.

Same as `bertqa demo`; see `python run.py --help`.
"""
import sys

from bertqa.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
