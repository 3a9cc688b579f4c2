# wire tests (tests/dist/CMakeLists.txt)
