#!/usr/bin/env python3
"""Reads Autobahn|Testsuite's report (index.json of the fuzzingclient) and
prints the results per section; exits 1 on any FAILED case, any UNIMPLEMENTED
case in sections 12 and 13 (compression), or a NON-STRICT / INFORMATIONAL
case that is not in the explained list (README: "Autobahn|Testsuite")."""
import json
import sys
from collections import Counter, defaultdict

# Cases whose non-strict or informational result is explained in the README:
# 6.4.3-6.4.4 invalid UTF-8 inside one frame is found when the frame is complete;
# 7.1.6 every message received before the close is echoed (implementation-defined);
# 7.13.1-7.13.2 close codes 5000 and 65535 are answered with 1002 (undefined by the RFC).
EXPLAINED = {"6.4.3", "6.4.4", "7.1.6", "7.13.1", "7.13.2"}


def key(case):
    return [int(part) for part in case.split(".")]


def main(path):
    with open(path) as handle:
        index = json.load(handle)
    if not index:
        print("autobahn: empty report")
        return 1
    agent, cases = next(iter(index.items()))
    per_section = defaultdict(Counter)
    totals = Counter()
    problems = []
    notes = []
    for case, result in sorted(cases.items(), key=lambda item: key(item[0])):
        behavior = result.get("behavior", "MISSING")
        close = result.get("behaviorClose", "")
        section = case.split(".")[0]
        per_section[section][behavior] += 1
        totals[behavior] += 1
        if behavior == "FAILED" or close == "FAILED":
            problems.append("%s FAILED (close: %s)" % (case, close))
        elif behavior == "UNIMPLEMENTED" and section in ("12", "13"):
            problems.append("%s UNIMPLEMENTED" % case)
        elif behavior in ("NON-STRICT", "INFORMATIONAL"):
            if case in EXPLAINED:
                notes.append("%s %s (explained)" % (case, behavior))
            else:
                problems.append("%s %s (not explained)" % (case, behavior))
    kinds = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
    print("autobahn: %s, %d cases" % (agent, sum(totals.values())))
    print("| section | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for section in sorted(per_section, key=int):
        print("| %s | %s |" % (section, " | ".join(str(per_section[section][kind]) for kind in kinds)))
    print("| all | %s |" % " | ".join(str(totals[kind]) for kind in kinds))
    for note in notes:
        print("autobahn: " + note)
    for problem in problems:
        print("autobahn: " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "artifacts/autobahn/index.json"))
