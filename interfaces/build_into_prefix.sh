#!/usr/bin/env bash
# Generate, build and install ROS 2 interface packages into a prefix with the rosidl tool chain
# found there (the project's .venv: the Jazzy ros-* wheels install a normal ament prefix into it).
#
#   interfaces/build_into_prefix.sh PREFIX BUILD_DIR PACKAGE_DIR...
#
# PREFIX/bin/python builds (its Python and NumPy headers; interfaces/cmake/wheel_include_dirs.cmake
# repoints the wheels' exported include paths to them). The generated Python packages land in
# PREFIX/lib/pythonX.Y/site-packages and the libraries in PREFIX/lib, where the venv's python and
# rclpy (ros_wheels_bootstrapper puts PREFIX/lib on LD_LIBRARY_PATH) find them; the ament index
# entries land in PREFIX/share/ament_index.
set -euo pipefail
prefix=$(cd "$1" && pwd)
build_root=$2
shift 2
export AMENT_PREFIX_PATH="$prefix${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$prefix${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export PATH="$prefix/bin:$PATH"
jobs=$(nproc 2>/dev/null || echo 2)
for pkg_dir in "$@"; do
    name=$(basename "$pkg_dir")
    build="$build_root/$name"
    rm -rf "$build"
    echo "== generating $name into $prefix"
    cmake -S "$pkg_dir" -B "$build" -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_BUILD_TYPE=Release \
        -DPython3_EXECUTABLE="$prefix/bin/python" -DBUILD_TESTING=OFF --log-level=WARNING > "$build.log" 2>&1 \
        || { cat "$build.log"; exit 1; }
    cmake --build "$build" -j "$jobs" >> "$build.log" 2>&1 || { tail -50 "$build.log"; exit 1; }
    cmake --install "$build" >> "$build.log" 2>&1 || { tail -50 "$build.log"; exit 1; }
done
