"""C++ implementations (LibTorch): source files shipped as package data, compiled by harness/runtimes/cpp.py."""
