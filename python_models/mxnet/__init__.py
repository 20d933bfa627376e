"""MXNet Gluon implementations (hybridized); run in the legacy environment."""
