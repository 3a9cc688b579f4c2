# redis tests (tests/dist/CMakeLists.txt)
