import signal

pytest_plugins = [
    "tests.fixtures.s3server",
    "tests.fixtures.pg",
    "tests.fixtures.faultproxy",
    "tests.fixtures.walarchive",
    "tests.fixtures.majors",
]

# A shell without job control starts background commands (`.ci/run &`) with SIGINT ignored,
# and Python then leaves it so.  Tests of Ctrl-C handling expect what a terminal gives.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
