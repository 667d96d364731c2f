/* build_info.h — the build's identity, generated at build time by
 * scripts/build_info.sh into build/gen/build_info.c (linked into
 * build/keel only). */
#ifndef KEEL_APP_BUILD_INFO_H
#define KEEL_APP_BUILD_INFO_H

extern const char app_build_git_revision[]; /* short hash, or "unknown" */
extern const char app_build_git_branch[];
extern const int app_build_git_dirty;       /* 1: built from a tree with changes */
extern const char app_build_time[];         /* the commit's time (ISO 8601) */

#endif
