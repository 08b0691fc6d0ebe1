# Stand-in for timescale/timescaledb:2.28.3-pg15, built by scripts/compose-test.sh where no image can
# be pulled. It follows the official images' Dockerfiles step by step: docker-library/postgres
# 15/bookworm (user postgres, PGDATA, docker-entrypoint.sh and docker-ensure-initdb.sh unchanged,
# STOPSIGNAL SIGINT) and timescale/timescaledb-docker (TimescaleDB built from source with
# PROJECT_INSTALL_METHOD=docker, `timescaledb` in shared_preload_libraries of the sample config,
# 000_install_timescaledb.sh in /docker-entrypoint-initdb.d/). The build context, which the script
# assembles, holds those vendored files and the TimescaleDB source tarball (sha256-checked).
# Differences from the real image (README, Docker): Debian bookworm's PostgreSQL 15 instead of the
# PGDG/Alpine build, and no timescaledb-tune (so no 001_timescaledb_tune.sh: PostgreSQL's default
# memory settings), timescaledb-parallel-copy, pgvector or older TimescaleDB versions.
FROM debian:bookworm-slim

# As docker-library/postgres: a fixed uid/gid, so a data volume keeps its owner across images.
RUN set -eux; \
    groupadd -r postgres --gid=999; \
    useradd -r -g postgres --uid=999 --home-dir=/var/lib/postgresql --shell=/bin/bash postgres; \
    install --directory --owner postgres --group postgres --mode 1777 /var/lib/postgresql

# PostgreSQL 15 without the cluster Debian's postinst would create; gosu for the entrypoint's drop
# to the postgres user, libnss-wrapper for `--user`, the en_US.UTF-8 locale the image defaults to.
# hadolint ignore=DL3008
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends postgresql-common gosu libnss-wrapper locales; \
    echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf; \
    apt-get install -y --no-install-recommends postgresql-15; \
    localedef -i en_US -c -f UTF-8 -A /usr/share/locale/locale.alias en_US.UTF-8; \
    rm -rf /var/lib/apt/lists/*
ENV LANG=en_US.utf8 \
    PG_MAJOR=15 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/15/bin \
    PGDATA=/var/lib/postgresql/data

RUN set -eux; \
    sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" /usr/share/postgresql/15/postgresql.conf.sample; \
    grep -F "listen_addresses = '*'" /usr/share/postgresql/15/postgresql.conf.sample; \
    install --verbose --directory --owner postgres --group postgres --mode 3777 /var/run/postgresql; \
    install --verbose --directory --owner postgres --group postgres --mode 1777 "$PGDATA"; \
    mkdir /docker-entrypoint-initdb.d

# TimescaleDB, full edition (Apache-2 + TSL), built and installed, its build tools removed again.
COPY timescaledb.tar.gz /build/timescaledb.tar.gz
# hadolint ignore=DL3008
RUN set -eux; \
    build_deps="postgresql-server-dev-15 cmake gcc make libc6-dev libssl-dev libkrb5-dev"; \
    apt-get update; \
    apt-get install -y --no-install-recommends $build_deps; \
    mkdir /build/timescaledb; \
    tar -xzf /build/timescaledb.tar.gz -C /build/timescaledb --strip-components=1; \
    cd /build/timescaledb; \
    ./bootstrap -DCMAKE_BUILD_TYPE=RelWithDebInfo -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
        -DWARNINGS_AS_ERRORS=OFF -DPROJECT_INSTALL_METHOD=docker; \
    make -C build -j"$(nproc)" install; \
    cd /; \
    rm -rf /build; \
    apt-get purge -y --auto-remove $build_deps; \
    rm -rf /var/lib/apt/lists/*; \
    sed -r -i "s/[#]*\s*(shared_preload_libraries)\s*=\s*'(.*)'/\1 = 'timescaledb,\2'/;s/,'/'/" \
        /usr/share/postgresql/15/postgresql.conf.sample; \
    grep -F "shared_preload_libraries = 'timescaledb'" /usr/share/postgresql/15/postgresql.conf.sample; \
    test -f /usr/lib/postgresql/15/lib/timescaledb-tsl-2.28.3.so

COPY docker-entrypoint.sh docker-ensure-initdb.sh /usr/local/bin/
COPY 000_install_timescaledb.sh /docker-entrypoint-initdb.d/
RUN ln -sT docker-ensure-initdb.sh /usr/local/bin/docker-enforce-initdb.sh
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
# Smart shutdown (SIGTERM) would wait for clients; SIGINT is PostgreSQL's fast shutdown.
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
