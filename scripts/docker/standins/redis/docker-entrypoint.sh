#!/bin/sh
# As the real image: `docker run redis:7 --appendonly yes` means redis-server with those options, and
# protected mode is off unless the command line sets it (the real image compiles that default in).
set -e
case $1 in
-* | *.conf) set -- redis-server "$@" ;;
esac
if [ "$1" = redis-server ]; then
    case " $* " in
    *" --protected-mode "*) ;;
    *) set -- "$@" --protected-mode no ;;
    esac
fi
exec "$@"
