pytest_plugins = ["tests.fixtures.s3server", "tests.fixtures.pg"]
