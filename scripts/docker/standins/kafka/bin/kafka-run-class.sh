#!/usr/bin/env bash
# As Kafka's own: runs a class on /opt/kafka/libs with the KAFKA_* JVM settings (256 MB heap by default).
# shellcheck disable=SC2086 # the *_OPTS variables hold several options each
exec java ${KAFKA_HEAP_OPTS:--Xmx256M} ${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true} \
    ${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=/opt/kafka/config/tools-log4j2.properties} ${KAFKA_OPTS:-} \
    -cp "/opt/kafka/libs/*" "$@"
