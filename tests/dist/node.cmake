# node tests (tests/dist/CMakeLists.txt)
