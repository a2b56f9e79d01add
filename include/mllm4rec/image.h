/* Images: decoding JPEG / PNG / WebP into 8-bit RGB, Pillow-exact bicubic
 * resizing, and the BLIP image processor (resize, rescale, normalise) that turns
 * an image into the float pixel values a vision encoder reads. */
#ifndef MLLM4REC_IMAGE_H
#define MLLM4REC_IMAGE_H

#include "mllm4rec/base.h"

/* An 8-bit RGB image, rows top to bottom, pixels interleaved (HWC). */
typedef struct mr_image {
    int width, height;
    uint8_t *rgb; /* width * height * 3 bytes; owned */
} mr_image;

/* Decodes a JPEG (baseline or progressive; grey, RGB, CMYK, YCCK), PNG (any bit
 * depth, palette, grey, alpha) or WebP file held in memory, chosen by its magic
 * bytes, into RGB as Pillow's Image.convert("RGB") gives it: alpha and
 * transparency are dropped (not composited), 16-bit samples keep their high byte,
 * CMYK is converted the way Pillow does. A corrupt or unsupported file is an
 * MR_ERR_INPUT error; `name` (may be NULL) goes into the message. */
int mr_image_decode(const uint8_t *data, size_t len, const char *name, mr_image *img, mr_error *e);
int mr_image_load(const char *path, mr_image *img, mr_error *e);
void mr_image_free(mr_image *img);

/* Pillow's resampling filters by their Image.Resampling numbers. */
enum { MR_RESAMPLE_BILINEAR = 2, MR_RESAMPLE_BICUBIC = 3 };

/* Image.resize((out_w, out_h), filter, reducing_gap=None) exactly as Pillow 9.4
 * computes it: separable convolution, horizontal pass first, coefficients in
 * fixed point with 22 fraction bits, rounding and clipping to 8 bits after each
 * pass. Same size returns a copy. */
int mr_image_resize(const mr_image *in, int out_w, int out_h, int filter, mr_image *out, mr_error *e);

/* transformers' BlipImageProcessor settings (preprocessor_config.json). */
typedef struct mr_image_processor {
    int do_resize, do_rescale, do_normalize;
    int width, height; /* size.width / size.height */
    int resample;      /* MR_RESAMPLE_* */
    double rescale_factor;
    float mean[3], std[3];
} mr_image_processor;

/* The defaults of BlipImageProcessor at the given size (384 in the class; BLIP-2
 * checkpoints say 224), with OpenAI CLIP's mean and std. */
void mr_image_processor_default(mr_image_processor *p, int size);
/* Reads preprocessor_config.json; fields that are absent keep the defaults. */
int mr_image_processor_load(mr_image_processor *p, const char *path, mr_error *e);

/* Writes the pixel values [3, height, width] (CHW, float32) of an RGB image:
 * resized, then (byte * rescale_factor in double, cast to float) - mean) / std
 * in float, as the processor computes them. `resized` (may be NULL) receives
 * the resized RGB image. */
int mr_image_to_pixels(const mr_image_processor *p, const mr_image *img, float *pixels, mr_image *resized,
                       mr_error *e);

#endif
