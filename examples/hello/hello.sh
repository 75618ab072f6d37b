#!/bin/sh
echo "Hello from an rbuild image (busybox $(busybox | head -n1 | cut -d' ' -f2))"
