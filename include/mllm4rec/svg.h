/* Line plots as SVG, with no plotting dependency: stacked panels, each with axes,
 * ticks at "nice" numbers, axis labels, a title, a legend, lines with points,
 * optional error bars and one marked point per series. Readable at 800 px. */
#ifndef MLLM4REC_SVG_H
#define MLLM4REC_SVG_H

#include "mllm4rec/base.h"

typedef struct svg_series {
    const char *name;
    int n;
    const double *x, *y;
    const double *err; /* half-length of an error bar per point (NAN or 0: none); may be NULL */
    int mark;          /* index of a point drawn as a marked "best" point, or -1 */
} svg_series;

typedef struct svg_panel {
    const char *title, *xlabel, *ylabel;
    int n_series;
    const svg_series *series;
    int x_fixed;         /* 1: the x axis covers at least [x_min, x_max] (panels sharing an x axis) */
    double x_min, x_max;
} svg_panel;

/* Panel layout in pixels: every panel is width x SVG_PANEL_HEIGHT, stacked from the top. */
#define SVG_PANEL_HEIGHT 360
#define SVG_MARGIN_LEFT 80
#define SVG_MARGIN_RIGHT 30
#define SVG_MARGIN_TOP 40
#define SVG_MARGIN_BOTTOM 56

typedef struct svg_axis {
    double lo, hi, step; /* ticks at lo, lo + step, ..., hi */
} svg_axis;
/* An axis covering [min, max] with about `ticks` ticks at 1, 2 or 5 times a power of ten. */
void svg_nice_axis(double min, double max, int ticks, svg_axis *a);
/* The axes a panel gets from its data (error bars included). */
void svg_panel_axes(const svg_panel *p, svg_axis *x, svg_axis *y);

/* Writes the figure atomically. */
int svg_write(const char *path, const svg_panel *panels, int n_panels, int width, mr_error *e);

#endif
