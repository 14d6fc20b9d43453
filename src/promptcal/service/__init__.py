"""The transport-free processing of one exposure: messages (schemas), snap assembly,
reference preloading, reading, calibrating and writing products, the outcome and its
result messages, retries and the kernel warm-up. Kafka lives in :mod:`promptcal.stream`."""
