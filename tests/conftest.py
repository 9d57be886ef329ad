pytest_plugins = [
    "tests.support.postgres",
    "tests.support.kube",
    "tests.support.gitops",
    "tests.support.pgbouncer",
    "tests.support.replication",
    "tests.support.browser",
    "tests.support.otlp",
]
